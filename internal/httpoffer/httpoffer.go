// Package httpoffer holds what the naming tree's RoundTripper and the
// proxy share about sending a request to an offer, a base URL bound in
// the naming tree ("http://10.0.0.7:8080" or "https://host/prefix"):
// where the request goes, and when it may go to another offer after a
// failure.
package httpoffer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// URL returns a copy of u aimed at base: base's scheme and host, and
// base's path followed by u's.
func URL(u *url.URL, base string) (*url.URL, error) {
	b, err := url.Parse(base)
	if err != nil || (b.Scheme != "http" && b.Scheme != "https") || b.Host == "" {
		return nil, fmt.Errorf("not an http(s) base URL: %q", base)
	}
	out := *u
	out.Scheme, out.Host = b.Scheme, b.Host
	if p := strings.TrimSuffix(b.Path, "/"); p != "" {
		out.Path = p + "/" + strings.TrimPrefix(u.Path, "/")
		out.RawPath = ""
	}
	return &out, nil
}

// Idempotent reports whether sending req twice does no harm: its method
// says so, or the client marked it with an idempotency key (which the
// application must honor).
func Idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// NotSent reports whether err is a failure to connect (refused,
// unreachable, a dial timeout): the request never left, so any request
// may go to another offer.
func NotSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
