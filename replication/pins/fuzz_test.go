package pins

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/naming"
)

// FuzzHandleCall sends the pins channel's call handler (what a remote
// member's On asks) arbitrary methods and bodies, on a one-node cluster:
// it never panics, answers an unknown method or a bad key with an error
// (ErrInvalidKey for a claim), and answers a good key by pinning it here
// with an answer that decodes and agrees with Owner. Seeds:
// testdata/fuzz/FuzzHandleCall.
func FuzzHandleCall(f *testing.F) {
	for _, s := range []struct {
		method string
		body   string
	}{
		{methodClaim, "cart/42"},
		{methodClaim, ""},
		{methodClaim, "a//b"},
		{methodClaim, "../etc"},
		{methodClaim, "/lead/and/trail/"},
		{methodClaim, strings.Repeat("x/", 300)},
		{methodClaim, "\xff\x00"},
		{"take", "cart/42"},
		{"", ""},
	} {
		f.Add(s.method, []byte(s.body))
	}
	nodes := startPins(f, 1)
	p := nodes[0].pins
	h := handler{p}
	f.Fuzz(func(t *testing.T, method string, body []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := h.HandleCall(ctx, "node-x", method, body)
		if err != nil {
			require.Nil(t, resp)
			if method == methodClaim {
				require.True(t, errors.Is(err, ErrInvalidKey), "a claim refused with %v", err)
			}
			return
		}
		require.Equal(t, methodClaim, method, "only a claim succeeds")
		var a claimAnswer
		require.NoError(t, wire.Unmarshal(resp, &a))
		key := string(body)
		pin, err := p.Owner(key)
		require.NoError(t, err)
		require.Equal(t, Pin{Key: key, Owner: p.self, Token: a.Token}, pin)
		require.Equal(t, p.self, a.Owner)
		_, err = naming.NormalizeName(key)
		require.NoError(t, err, "a key that is no name was pinned")
		require.NoError(t, p.Release(ctx, key)) // keep the tree small
	})
}
