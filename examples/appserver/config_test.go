package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/troupe-go/troupe/membership"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestOptionsDefaults(t *testing.T) {
	o, err := parseOptions([]string{"-role", "worker", "-bind", "127.0.0.3:7000", "-wka", "127.0.0.2:7946, 127.0.0.3:7000"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.NodeName(); got != "127.0.0.3:7000" {
		t.Errorf("default name %q, want the bind address", got)
	}
	if got := o.TransportAddr(); got != "127.0.0.3:7001" {
		t.Errorf("default transport %q, want the gossip port + 1", got)
	}
	if got := o.plainHTTP(); got != "127.0.0.3:8080" {
		t.Errorf("default HTTP %q", got)
	}
	if got := o.services(); len(got) != 1 || got[0] != "services/web" {
		t.Errorf("worker services %q", got)
	}
	mc, err := o.membershipConfig(membership.GenerateKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(mc.WellKnown) != 2 || mc.WellKnown[1] != "127.0.0.3:7000" || mc.Multicast != nil || mc.Role != "worker" || mc.Insecure {
		t.Errorf("membership config %+v", mc)
	}
	if err := mc.Validate(); err != nil {
		t.Error(err)
	}

	// With -https alone there is no plain HTTP; the manager binds the console.
	o, err = parseOptions([]string{"-role", "manager", "-wka", "a:1", "-https", "127.0.0.2:8443", "-cert", "c", "-key", "k", "-bind", "127.0.0.2:0"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.plainHTTP() != "" || o.TransportAddr() != "127.0.0.2:0" || o.services()[0] != consoleService {
		t.Errorf("plain %q transport %q services %q", o.plainHTTP(), o.TransportAddr(), o.services())
	}
	if !strings.Contains(o.NodeName(), "-") {
		t.Errorf("name with port 0: %q, want host-pid", o.NodeName())
	}
}

func TestOptionsEnvironment(t *testing.T) {
	o, err := parseOptions([]string{"-weight", "7"}, env(
		"TROUPE_ROLE", "worker",
		"TROUPE_MULTICAST", "239.1.2.3:9999",
		"TROUPE_MULTICAST_TTL", "2",
		"TROUPE_WEIGHT", "5", // the flag wins
		"TROUPE_INSECURE", "true",
		"TROUPE_KEY_FILE", "",
		"TROUPE_LOG_LEVEL", "debug",
	), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.role != "worker" || o.weight != 7 || !o.Insecure || o.LogLevel != "debug" || o.MulticastTTL != 2 {
		t.Errorf("options %+v", o)
	}
	mc, err := o.membershipConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := mc.Multicast; m == nil || m.Group != "239.1.2.3" || m.Port != 9999 || m.TTL != 2 || mc.SecretKeys != nil {
		t.Errorf("multicast %+v keys %v", mc.Multicast, mc.SecretKeys)
	}

	o, err = parseOptions([]string{"-role", "worker", "-multicast", "default"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if mc, _ := o.membershipConfig(nil, nil); mc.Multicast == nil || mc.Multicast.Group != "" {
		t.Errorf("-multicast default: %+v", mc.Multicast)
	}
}

func TestOptionsErrors(t *testing.T) {
	if _, err := parseOptions([]string{"-h"}, env(), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		want []string
	}{
		{[]string{"-role", "worker", "-multicast", "10.0.0.1:5"}, nil, []string{"not an IPv4 multicast group"}},
		{[]string{"-role", "worker", "-wka", "a:1", "-log-level", "loud", "-profile", "fast", "-weight", "-1"}, nil,
			[]string{"-log-level", "-profile", "-weight -1"}},
		{[]string{"-role", "worker", "-wka", "a:1", "-cert", "c"}, nil, []string{"-cert and -key are for -https"}},
		{[]string{"-role", "worker", "-wka", "a:1", "-multicast-ttl", "3"}, nil, []string{"need -multicast"}},
		{[]string{"-role", "worker", "-wka", "a:1", "-insecure"}, []string{"TROUPE_CLUSTER_KEY", "x"}, []string{"-insecure, but a cluster key"}},
		{[]string{"-role", "worker", "-wka", "a:1", "-http", ":8080"}, nil, []string{"-http"}},
		{[]string{"-role", "worker", "-wka", "a:1", "extra"}, nil, []string{"unexpected arguments"}},
	} {
		_, err := parseOptions(tc.args, env(tc.env...), io.Discard)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want it to say %q", tc.args, err, w)
			}
		}
	}
}
