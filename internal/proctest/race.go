//go:build race

package proctest

func init() { Race = true }
