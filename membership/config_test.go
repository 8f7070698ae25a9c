package membership_test

import (
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/membership"
)

func TestConfigValidate(t *testing.T) {
	ok := membership.Config{ClusterName: "orders", NodeName: "a", BindAddr: "127.0.0.1:0", SecretKeys: [][]byte{membership.GenerateKey()}}
	require.NoError(t, ok.Validate())

	cases := []struct {
		name   string
		mutate func(*membership.Config)
		want   error
		says   string
	}{
		{"empty cluster name", func(c *membership.Config) { c.ClusterName = "" }, membership.ErrInvalidConfig, "ClusterName is required"},
		{"cluster name with space", func(c *membership.Config) { c.ClusterName = "a b" }, membership.ErrInvalidConfig, "spaces"},
		{"wildcard bind without advertise", func(c *membership.Config) { c.BindAddr = "0.0.0.0:7946" }, membership.ErrInvalidConfig, "set AdvertiseAddr"},
		{"ipv6 wildcard bind without advertise", func(c *membership.Config) { c.BindAddr = "[::]:7946" }, membership.ErrInvalidConfig, "set AdvertiseAddr"},
		{"unspecified advertise", func(c *membership.Config) { c.AdvertiseAddr = "0.0.0.0" }, membership.ErrInvalidConfig, "unspecified"},
		{"host name bind", func(c *membership.Config) { c.BindAddr = "localhost:7946" }, membership.ErrInvalidConfig, "not an IP address"},
		{"loopback advertise, remote peer", func(c *membership.Config) { c.WellKnown = []string{"10.1.2.3:7946"} }, membership.ErrInvalidConfig, "could never reach us"},
		{"metadata over 512 bytes", func(c *membership.Config) { c.Tags = map[string]string{"x": strings.Repeat("y", 600)} }, membership.ErrMetaTooLarge, "512"},
		{"bad multicast group", func(c *membership.Config) { c.Multicast = &membership.MulticastConfig{Group: "10.0.0.1"} }, membership.ErrInvalidConfig, "not an IPv4 multicast"},
		{"multicast TTL", func(c *membership.Config) { c.Multicast = &membership.MulticastConfig{TTL: 300} }, membership.ErrInvalidConfig, "TTL"},
		{"short key", func(c *membership.Config) { c.SecretKeys = [][]byte{[]byte("short")} }, membership.ErrInvalidConfig, "16, 24 or 32"},
		{"no key", func(c *membership.Config) { c.SecretKeys = nil }, membership.ErrInvalidConfig, "SecretKeys is empty"},
		{"negative weight", func(c *membership.Config) { c.Weight = -1 }, membership.ErrInvalidConfig, "Weight"},
		{"bad well-known port", func(c *membership.Config) { c.WellKnown = []string{"127.0.0.1:99999"} }, membership.ErrInvalidConfig, "bad port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.says)
		})
	}
}

// Validate reports every problem at once, and never writes to the
// caller's Config.
func TestConfigValidateAllAtOnceWithoutMutating(t *testing.T) {
	c := membership.Config{BindAddr: "0.0.0.0:1", Weight: -5}
	err := c.Validate()
	require.ErrorContains(t, err, "ClusterName")
	require.ErrorContains(t, err, "AdvertiseAddr")
	require.ErrorContains(t, err, "Weight")
	require.Equal(t, membership.Config{BindAddr: "0.0.0.0:1", Weight: -5}, c)

	m := &membership.MulticastConfig{}
	c = membership.Config{ClusterName: "x", NodeName: "y", Multicast: m, Insecure: true}
	require.NoError(t, c.Validate())
	require.Equal(t, membership.MulticastConfig{}, *m, "defaults go to a copy")
}

func TestConfigWildcardBindWithAdvertise(t *testing.T) {
	c := membership.Config{ClusterName: "x", NodeName: "y", BindAddr: "0.0.0.0:0", AdvertiseAddr: "127.0.0.1", Insecure: true}
	require.NoError(t, c.Validate())
}

// The default refuses to run without a cluster key; Insecure says so
// explicitly, and the node then warns once.
func TestConfigInsecureIsExplicit(t *testing.T) {
	c := membership.Config{ClusterName: "x", NodeName: "y", BindAddr: "127.0.0.1:0"}
	_, err := membership.New(t.Context(), c)
	require.ErrorIs(t, err, membership.ErrInvalidConfig)
	require.ErrorContains(t, err, "head -c 32 /dev/urandom | base64")

	var logs strings.Builder
	c.Insecure = true
	c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n, err := membership.New(t.Context(), c)
	require.NoError(t, err)
	defer n.Shutdown()
	require.False(t, n.Secure())
	require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
	require.Contains(t, logs.String(), "Insecure")
}

func TestDecodeKey(t *testing.T) {
	k := membership.GenerateKey()
	got, err := membership.DecodeKey(" " + base64.StdEncoding.EncodeToString(k) + "\n")
	require.NoError(t, err)
	require.Equal(t, k, got)
	_, err = membership.DecodeKey(base64.StdEncoding.EncodeToString(k[:10]))
	require.ErrorIs(t, err, membership.ErrInvalidConfig)
	_, err = membership.DecodeKey("not base64 !")
	require.ErrorIs(t, err, membership.ErrInvalidConfig)
}
