package httpoffer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestURL(t *testing.T) {
	u, _ := url.Parse("/items/7?x=1")
	for base, want := range map[string]string{
		"http://10.0.0.7:8080": "http://10.0.0.7:8080/items/7?x=1",
		"https://host/prefix/": "https://host/prefix/items/7?x=1",
		"https://host/prefix":  "https://host/prefix/items/7?x=1",
		"http://[::1]:80/api":  "http://[::1]:80/api/items/7?x=1",
	} {
		got, err := URL(u, base)
		require.NoError(t, err, base)
		require.Equal(t, want, got.String(), base)
	}
	require.Equal(t, "/items/7?x=1", u.String(), "u is not changed")
	for _, bad := range []string{"", "10.0.0.7:8080", "ftp://host", "http://", "%zz"} {
		_, err := URL(u, bad)
		require.Error(t, err, bad)
	}
}

func TestIdempotent(t *testing.T) {
	for method, want := range map[string]bool{"GET": true, "PUT": true, "DELETE": true, "POST": false, "PATCH": false} {
		req, _ := http.NewRequest(method, "http://x/", nil)
		require.Equal(t, want, Idempotent(req), method)
	}
	req, _ := http.NewRequest("POST", "http://x/", nil)
	req.Header.Set("Idempotency-Key", "k")
	require.True(t, Idempotent(req))
}

func TestNotSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	_, err = http.Get("http://" + addr) // refused: nothing listens there now
	require.Error(t, err)
	require.True(t, NotSent(err), "%v", err)
	require.False(t, NotSent(fmt.Errorf("read: %w", &net.OpError{Op: "read", Err: errors.New("reset")})))
	require.False(t, NotSent(errors.New("EOF")))
}
