// Package clusterkey reads a cluster's secret key the way Troupe's
// programs take it: from a file named by a flag, or from the environment
// variable TROUPE_CLUSTER_KEY, base64 as membership.DecodeKey reads it.
//
//	key, err := clusterkey.Load(*keyFile)
package clusterkey

import (
	"errors"
	"os"

	"github.com/troupe-go/troupe/membership"
)

// EnvVar is the environment variable read when no file is named.
const EnvVar = "TROUPE_CLUSTER_KEY"

// Load reads the cluster key from file, or from EnvVar when file is "".
func Load(file string) ([]byte, error) {
	text := os.Getenv(EnvVar)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		text = string(b)
	}
	if text == "" {
		return nil, errors.New("no cluster key: pass -key-file or set " + EnvVar + " (make one with: head -c 32 /dev/urandom | base64)")
	}
	return membership.DecodeKey(text)
}
