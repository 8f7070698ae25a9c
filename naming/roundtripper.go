package naming

import (
	"fmt"
	"net"
	"time"

	"net/http"

	"github.com/troupe-go/troupe/internal/httpoffer"
)

// RoundTripperOptions configures a RoundTripper. Zero fields take the
// defaults written beside them.
type RoundTripperOptions struct {
	// Base sends each attempt. Default: a clone of
	// http.DefaultTransport that gives up connecting after 2 s and
	// waiting for response headers after 30 s, so that a dead or paused
	// provider costs a bounded wait before the next offer is tried.
	Base http.RoundTripper
	// MaxAttempts bounds how many offers one request tries. Default 3;
	// never more than the name has live offers.
	MaxAttempts int
	// RetryNonIdempotent lets requests that are not idempotent (POST,
	// PATCH, without an Idempotency-Key header) fail over too. Off by
	// default: after a connection failure such a request may or may not
	// have been processed, and only the caller knows whether it is safe to
	// send it again.
	RetryNonIdempotent bool
}

// RoundTripper is a replica-aware http.RoundTripper, the Go form of
// WebLogic's replica-aware stub: every request goes to one offer of a
// name, chosen by a Policy, whose value is the base URL of a provider
// ("http://10.0.0.7:8080" or "https://host/prefix"). The request's
// scheme and host are replaced by the offer's, and its path is appended
// to the offer's path.
//
// When an attempt fails before a response arrives (the provider died:
// connection refused or reset, a timeout), an idempotent request (GET,
// HEAD, OPTIONS, TRACE, PUT, DELETE, or any request with an
// Idempotency-Key header) is sent again to another offer, up to
// MaxAttempts offers; any request is, when the provider refused the
// connection (it was never sent). For a load balancer in front of
// application servers, with timeouts, failure memory and bodies kept for
// replay, use package proxy. A request with a body fails over only if its body
// can be replayed (Request.GetBody, which http.NewRequest sets for
// in-memory bodies). A response, whatever its status, is returned as is.
type RoundTripper struct {
	tree   *Tree
	name   string
	policy Policy
	opts   RoundTripperOptions
}

var _ http.RoundTripper = (*RoundTripper)(nil)

// NewRoundTripper returns a RoundTripper for the offers of name, chosen by
// policy (nil: RoundRobin).
func NewRoundTripper(tree *Tree, name string, policy Policy, opts RoundTripperOptions) (*RoundTripper, error) {
	n, err := normalize(name, false)
	if err != nil {
		return nil, err
	}
	if tree == nil {
		return nil, fmt.Errorf("%w: tree is nil", ErrInvalidOptions)
	}
	if opts.Base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 30 * time.Second
		opts.Base = tr
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 3
	}
	if opts.MaxAttempts < 0 {
		return nil, fmt.Errorf("%w: MaxAttempts %d is negative", ErrInvalidOptions, opts.MaxAttempts)
	}
	if policy == nil {
		policy = RoundRobin()
	}
	return &RoundTripper{tree: tree, name: n, policy: policy, opts: opts}, nil
}

// RoundTrip implements http.RoundTripper.
func (rt *RoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	retry := (httpoffer.Idempotent(req) || rt.opts.RetryNonIdempotent) && (!hasBody || req.GetBody != nil)
	var tried []string
	var lastErr error
	for attempt := 0; attempt < rt.opts.MaxAttempts; attempt++ {
		b, err := rt.tree.Lookup(rt.name)
		var offer Offer
		if err == nil {
			offer, err = rt.tree.pick(b, rt.policy, tried)
		}
		if err != nil {
			if lastErr != nil {
				return nil, fmt.Errorf("naming: %s: %d offers failed, the last with: %w", rt.name, attempt, lastErr)
			}
			closeBody(req)
			return nil, fmt.Errorf("naming: %s: %w", rt.name, err)
		}
		tried = append(tried, offer.Node)
		out, err := rewrite(req, offer, attempt > 0)
		if err != nil {
			if attempt == 0 {
				closeBody(req)
			}
			lastErr = err
			if !retry {
				return nil, err
			}
			continue
		}
		resp, err := rt.opts.Base.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		lastErr = fmt.Errorf("naming: %s: offer of %s: %w", rt.name, offer.Node, err)
		if req.Context().Err() != nil || !(retry || httpoffer.NotSent(err) && (!hasBody || req.GetBody != nil)) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// rewrite returns req aimed at offer; replay asks for a fresh body.
func rewrite(req *http.Request, offer Offer, replay bool) (*http.Request, error) {
	u, err := httpoffer.URL(req.URL, string(offer.Value))
	if err != nil {
		return nil, fmt.Errorf("naming: offer of %s: %w", offer.Node, err)
	}
	out := req.Clone(req.Context())
	out.URL = u
	out.Host = u.Host
	if replay && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("naming: replay body: %w", err)
		}
		out.Body = body
	}
	return out, nil
}
