package multicast

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func validConfig() Config {
	return Config{
		ClusterName: "c",
		NodeName:    "n",
		Advertise:   func() string { return "127.0.0.1:7946" },
		OnPeer:      func(string, string) {},
	}
}

func TestConfigDefaults(t *testing.T) {
	in := validConfig()
	require.NoError(t, in.Validate())
	out, err := in.withDefaults()
	require.NoError(t, err)

	assert.Equal(t, DefaultGroup, out.Group)
	assert.Equal(t, DefaultPort, out.Port)
	assert.Equal(t, DefaultTTL, out.TTL)
	assert.Equal(t, DefaultInterval, out.Interval)
	assert.Equal(t, DefaultSlowInterval, out.SlowInterval)
	assert.Equal(t, DefaultMaxSkew, out.MaxSkew)
	assert.NotNil(t, out.Keys)
	assert.NotNil(t, out.Joined)
	assert.NotNil(t, out.Known)
	assert.NotNil(t, out.Logger)

	// The caller's struct is not written to.
	assert.Empty(t, in.Group)
	assert.Zero(t, in.Port)
	assert.Nil(t, in.Keys)
	assert.Nil(t, in.Logger)
}

func TestConfigSlowIntervalFollowsLongInterval(t *testing.T) {
	c := validConfig()
	c.Interval = 10 * time.Second
	out, err := c.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, out.SlowInterval)
}

func TestConfigInvalid(t *testing.T) {
	long := string(make([]byte, MaxNameLen+1))
	for name, mutate := range map[string]func(*Config){
		"unicast group":     func(c *Config) { c.Group = "10.0.0.1" },
		"ipv6 group":        func(c *Config) { c.Group = "ff02::1" },
		"garbage group":     func(c *Config) { c.Group = "not an address" },
		"negative port":     func(c *Config) { c.Port = -1 },
		"large port":        func(c *Config) { c.Port = 65536 },
		"negative ttl":      func(c *Config) { c.TTL = -1 },
		"large ttl":         func(c *Config) { c.TTL = 256 },
		"negative interval": func(c *Config) { c.Interval = -time.Second },
		"slow < fast":       func(c *Config) { c.Interval = time.Second; c.SlowInterval = time.Millisecond },
		"negative skew":     func(c *Config) { c.MaxSkew = -time.Second },
		"no cluster":        func(c *Config) { c.ClusterName = "" },
		"long cluster":      func(c *Config) { c.ClusterName = long },
		"no node":           func(c *Config) { c.NodeName = "" },
		"long node":         func(c *Config) { c.NodeName = long },
		"no advertise":      func(c *Config) { c.Advertise = nil },
		"no onpeer":         func(c *Config) { c.OnPeer = nil },
		"bad local host":    func(c *Config) { c.LocalHost = "localhost" },
		"ipv6 local host":   func(c *Config) { c.LocalHost = "::1" },
	} {
		t.Run(name, func(t *testing.T) {
			c := validConfig()
			mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidConfig)

			// Start refuses it before touching the network, so this runs
			// anywhere.
			d, err := Start(context.Background(), c)
			assert.Nil(t, d)
			assert.True(t, errors.Is(err, ErrInvalidConfig), "%v", err)
		})
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	err := Config{Port: -1, TTL: 300}.Validate()
	require.Error(t, err)
	for _, want := range []string{"Port", "TTL", "ClusterName", "NodeName", "Advertise", "OnPeer"} {
		assert.Contains(t, err.Error(), want)
	}
}
