package transport

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/troupe-go/troupe/internal/testcerts"
)

func TestConfigValidate(t *testing.T) {
	ca := testcerts.NewCA(t)
	ok := Config{BindAddr: "127.0.0.1:0"}
	require.NoError(t, ok.Validate())
	require.Equal(t, Config{BindAddr: "127.0.0.1:0"}, ok, "Validate must not fill in the caller's config")

	withTLS := ca.TLSConfig(t)
	require.NoError(t, Config{BindAddr: ":0", TLS: withTLS, Keys: [][]byte{{1}}}.Validate(), "keys are ignored with TLS")

	for name, c := range map[string]Config{
		"no BindAddr":          {},
		"BindAddr not a pair":  {BindAddr: "127.0.0.1"},
		"frames too small":     {BindAddr: ":0", MaxFrameSize: 100},
		"frames too large":     {BindAddr: ":0", MaxFrameSize: 2 << 30},
		"negative concurrency": {BindAddr: ":0", MaxConcurrentRequests: -1},
		"negative timeout":     {BindAddr: ":0", DialTimeout: -time.Second},
		"tiny timeout":         {BindAddr: ":0", IdleTimeout: time.Millisecond},
		"key of 20 bytes":      {BindAddr: ":0", Keys: [][]byte{key(1), make([]byte, 20)}},
		"too many keys":        {BindAddr: ":0", Keys: make([][]byte, maxKeys+1)},
		"TLS without a cert":   {BindAddr: ":0", TLS: &tls.Config{RootCAs: ca.Pool, ClientCAs: ca.Pool}},
		"TLS without ClientCAs": {BindAddr: ":0", TLS: &tls.Config{
			Certificates: withTLS.Certificates, RootCAs: ca.Pool,
		}},
	} {
		require.Error(t, c.Validate(), name)
	}
}
