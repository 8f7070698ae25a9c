package pins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// ForwardedHeader marks a request that one node forwarded to a key's
// owner. A node that receives such a request for a key it does not own
// (the pin moved meanwhile) answers 503 rather than forwarding again.
const ForwardedHeader = "Troupe-Forwarded-By"

type forwardTarget struct{}

// Handler serves requests for pinned objects from any node. keyOf names
// the key a request is for. When this node owns the key, local serves
// the request; when another node does, the request is forwarded to that
// node's HTTP address (its member tag Options.HTTPTag), where the same
// Handler serves it locally. When the key has no owner (never pinned,
// released, or its owner failed) or the owner cannot be reached, the
// answer is 503 Service Unavailable with the reason in the body; the
// client, or the application, pins the key again. Forwarded requests are
// sent once, never retried.
func (p *Pins) Handler(keyOf func(*http.Request) string, local http.Handler) http.Handler {
	proxy := &httputil.ReverseProxy{
		Transport: p.proxy,
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(r.In.Context().Value(forwardTarget{}).(*url.URL))
			r.Out.Host = r.In.Host
			r.Out.Header.Set(ForwardedHeader, p.self)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the client went away
			}
			target, _ := r.Context().Value(forwardTarget{}).(*url.URL)
			serviceUnavailable(w, fmt.Sprintf("the key's owner at %s is unreachable: %v", target.Host, err))
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := keyOf(r)
		pin, err := p.Owner(key)
		switch {
		case err != nil:
			serviceUnavailable(w, fmt.Sprintf("key %q has no owner (not pinned, released, or its owner failed): %v", key, err))
			return
		case pin.Owner == p.self:
			local.ServeHTTP(w, r)
			return
		case r.Header.Get(ForwardedHeader) != "":
			serviceUnavailable(w, fmt.Sprintf("key %q moved to %s while the request was forwarded", key, pin.Owner))
			return
		}
		m, ok := p.cluster.Member(pin.Owner)
		addr := m.Tag(p.opts.HTTPTag)
		if !ok || addr == "" {
			serviceUnavailable(w, fmt.Sprintf("owner %s of key %q publishes no HTTP address (member tag %q)", pin.Owner, key, p.opts.HTTPTag))
			return
		}
		target := &url.URL{Scheme: "http", Host: addr}
		proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardTarget{}, target)))
	})
}

func serviceUnavailable(w http.ResponseWriter, reason string) {
	http.Error(w, "troupe: "+reason, http.StatusServiceUnavailable)
}
