package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/troupe-go/troupe/internal/httpoffer"
	"github.com/troupe-go/troupe/naming"
)

// router is the Handler's http.RoundTripper: it picks a node for each
// attempt, and sends the request on to another one when the first fails
// in a way that allows it.
type router struct {
	h         *Handler
	transport *http.Transport
	down      downSet
}

func newRouter(h *Handler) *router {
	d := &net.Dialer{Timeout: h.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSClientConfig:       h.cfg.TLS.Clone(),
		TLSHandshakeTimeout:   h.cfg.DialTimeout,
		ResponseHeaderTimeout: h.cfg.HeaderTimeout,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &router{h: h, transport: tr, down: downSet{until: map[string]time.Time{}}}
}

// RoundTrip implements http.RoundTripper for the ReverseProxy.
func (rt *router) RoundTrip(req *http.Request) (*http.Response, error) {
	cfg := &rt.h.cfg
	stats := &rt.h.stats
	service := cfg.service(req.URL.Path)
	body, replayable, err := rt.buffer(req)
	if err != nil {
		return nil, err
	}
	safe := replayable && (cfg.RetryUnsafe || httpoffer.Idempotent(req))
	var tried []string
	var lastErr error
	for attempt := 0; attempt < cfg.MaxAttempts; attempt++ {
		cands, err := cfg.Names.Candidates(service)
		cands = slices.DeleteFunc(cands, func(c naming.Candidate) bool { return slices.Contains(tried, c.Node) })
		if len(cands) == 0 {
			if lastErr != nil {
				break
			}
			if err == nil {
				err = errors.New("no offer")
			}
			return nil, &unavailableError{service: service, err: err}
		}
		cands = rt.preferUp(cands)
		i := cfg.Policy.Pick(req, cands)
		if i < 0 || i >= len(cands) {
			if lastErr != nil {
				break
			}
			return nil, &unavailableError{service: service, err: fmt.Errorf("the policy chose none of %d offers", len(cands))}
		}
		node := cands[i].Node
		tried = append(tried, node)
		out, err := target(req, cands[i].Offer)
		if err != nil {
			lastErr = err
			continue // a bad offer: another node may have a good one
		}
		if body != nil {
			out.Body = io.NopCloser(body())
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body()), nil }
		} else if req.Body != nil && req.Body != http.NoBody {
			out.Body = req.Body // too large to keep: streamed, never retried
		}
		stats.attempts.Add(1)
		ctx, cancel := context.WithCancel(req.Context())
		resp, err := rt.transport.RoundTrip(out.WithContext(ctx))
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable && safe &&
			attempt+1 < cfg.MaxAttempts && rt.untried(service, tried) {
			// The node is up but cannot serve this now (a session in the
			// middle of moving, a node leaving): the request may go on.
			resp.Body.Close()
			cancel()
			lastErr = fmt.Errorf("%s: 503 Service Unavailable", node)
			stats.passed503.Add(1)
			continue
		}
		whole := false
		if err == nil && resp.StatusCode != http.StatusSwitchingProtocols &&
			resp.ContentLength >= 0 && resp.ContentLength <= cfg.MaxResponseBuffer {
			// Small enough to read whole before the client sees any of
			// it: a node that dies in the middle costs a retry, not a
			// broken response.
			err = readWhole(resp, cfg.BodyTimeout)
			whole = err == nil
		}
		if err == nil {
			if whole {
				cancel() // nothing more to read from the node
			} else {
				resp.Body = newTimedBody(resp.Body, cfg.BodyTimeout, cancel)
			}
			if attempt == 0 {
				stats.served.Add(1)
			} else {
				stats.retried.Add(1)
			}
			return resp, nil
		}
		cancel()
		lastErr = fmt.Errorf("%s: %w", node, err)
		if req.Context().Err() != nil {
			return nil, lastErr
		}
		var ne net.Error
		switch {
		case httpoffer.NotSent(err):
			// Refused or unreachable: its process is gone or not yet up.
			// Nothing was sent, so any request may go elsewhere.
			rt.markDown(node, err)
			if !replayable {
				return nil, &failedError{tried: tried, err: lastErr}
			}
		case errors.As(err, &ne) && ne.Timeout():
			rt.markDown(node, err) // paused or overloaded
			if !safe {
				return nil, &failedError{tried: tried, err: lastErr}
			}
		default:
			if !safe {
				return nil, &failedError{tried: tried, err: lastErr}
			}
		}
	}
	return nil, &failedError{tried: tried, err: lastErr}
}

// untried reports whether service has a live offer not in tried.
func (rt *router) untried(service string, tried []string) bool {
	cands, _ := rt.h.cfg.Names.Candidates(service)
	for _, c := range cands {
		if !slices.Contains(tried, c.Node) {
			return true
		}
	}
	return false
}

func (rt *router) markDown(node string, err error) {
	rt.h.stats.markedDown.Add(1)
	rt.down.mark(node, time.Now().Add(rt.h.cfg.DownFor))
	rt.h.cfg.Logger.Warn("node marked down", "node", node, "for", rt.h.cfg.DownFor, "err", err)
}

// preferUp returns the candidates not marked down, or all of them if
// every one is: a node that refuses again costs one round trip, and
// answering 503 while one might serve would be worse.
func (rt *router) preferUp(cands []naming.Candidate) []naming.Candidate {
	if rt.down.empty() {
		return cands
	}
	now := time.Now()
	up := cands[:0:0]
	for _, c := range cands {
		if !rt.down.isDown(c.Node, now) {
			up = append(up, c)
		}
	}
	if len(up) == 0 {
		return cands
	}
	return up
}

// buffer reads a request body of at most MaxBodyBuffer bytes, so that it
// can be sent again; body returns a fresh reader of it. A larger body
// is not replayable (body is nil, and req.Body streams what is left after
// the buffered start).
func (rt *router) buffer(req *http.Request) (body func() io.Reader, replayable bool, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, true, nil
	}
	limit := rt.h.cfg.MaxBodyBuffer
	if req.ContentLength > limit {
		return nil, false, nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return nil, false, fmt.Errorf("read request body: %w", err)
	}
	if int64(len(buf)) > limit {
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
		return nil, false, nil
	}
	req.Body.Close()
	return func() io.Reader { return bytes.NewReader(buf) }, true, nil
}

// target returns a shallow copy of req aimed at offer, keeping the
// client's Host.
func target(req *http.Request, offer naming.Offer) (*http.Request, error) {
	u, err := httpoffer.URL(req.URL, string(offer.Value))
	if err != nil {
		return nil, fmt.Errorf("offer of %s: %w", offer.Node, err)
	}
	out := *req
	out.URL = u
	return &out, nil
}

// readWhole replaces resp.Body, of a known small length, by its content
// read within timeout; it closes the original either way.
func readWhole(resp *http.Response, timeout time.Duration) error {
	defer resp.Body.Close()
	t := time.AfterFunc(timeout, func() { resp.Body.Close() })
	defer t.Stop()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the response: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// timedBody cancels the attempt when the body is closed, or when reading
// it takes longer than the body timeout.
type timedBody struct {
	io.ReadCloser
	timer  *time.Timer
	cancel context.CancelFunc
}

func newTimedBody(b io.ReadCloser, d time.Duration, cancel context.CancelFunc) *timedBody {
	return &timedBody{ReadCloser: b, timer: time.AfterFunc(d, cancel), cancel: cancel}
}

func (b *timedBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
