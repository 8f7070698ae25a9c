//go:build !linux

package netns

func runChild(string, []string) (string, error) { return "", ErrUnsupported }

func setupLoopback() error { return ErrUnsupported }
