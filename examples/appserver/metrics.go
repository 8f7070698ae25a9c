package main

import (
	"net/http"

	"github.com/troupe-go/troupe"
)

// metricsHandler returns the handler of GET /metrics, nil for none.
func metricsHandler(node *troupe.Node) (http.Handler, error) {
	return nil, nil
}
