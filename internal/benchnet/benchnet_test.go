package benchnet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPingPong(t *testing.T) {
	p, err := StartPingPong()
	require.NoError(t, err)
	lat, err := p.Run(10 * time.Millisecond)
	require.NoError(t, err)
	require.NotEmpty(t, lat)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close())
	require.Error(t, p.RoundTrip())
}

func TestPercentile(t *testing.T) {
	require.Zero(t, Percentile(nil, 50))
	lat := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	require.Equal(t, time.Duration(6), Percentile(lat, 50))
	require.Equal(t, time.Duration(10), Percentile(lat, 99))
	require.Equal(t, time.Duration(1), Percentile(lat, 0))
}
