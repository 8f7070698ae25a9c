package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/replication"
)

// A latency snapshot becomes a Prometheus histogram: seconds, cumulative
// buckets, and a count that includes the observations over every bound.
func TestHistogramIsCumulative(t *testing.T) {
	desc := prometheus.NewDesc("troupe_test_seconds", "test", nil, nil)
	h := replication.Histogram{
		Bounds: []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond},
		Counts: []uint64{2, 0, 3, 1},
		Sum:    1500 * time.Millisecond,
	}
	var m dto.Metric
	require.NoError(t, histogram(desc, h).Write(&m))
	got := m.GetHistogram()
	require.Equal(t, uint64(6), got.GetSampleCount())
	require.InDelta(t, 1.5, got.GetSampleSum(), 1e-9)
	var bounds []float64
	var cum []uint64
	for _, b := range got.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		cum = append(cum, b.GetCumulativeCount())
	}
	require.Equal(t, []float64{0.001, 0.01, 0.1}, bounds)
	require.Equal(t, []uint64{2, 2, 5}, cum)
}

// A spec whose values do not fit its labels is an error at scrape time,
// not a panic.
func TestBadSpecIsAnInvalidMetric(t *testing.T) {
	g := newGroup(nil, []spec[int]{{name: "bad", help: "h", typ: gauge,
		values: func(int) []value { return []value{{label: "x", v: 1}} }}})
	ch := make(chan prometheus.Metric, 1)
	g.collect(ch, 0)
	var m dto.Metric
	require.Error(t, (<-ch).Write(&m))
}
