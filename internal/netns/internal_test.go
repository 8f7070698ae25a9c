package netns

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestVerdict(t *testing.T) {
	err := fmt.Errorf("%w: fork/exec: operation not permitted", ErrNoPrivilege)

	msg, fail := verdict(err, false)
	assert.False(t, fail)
	assert.Contains(t, msg, "needs root or CAP_SYS_ADMIN")

	msg, fail = verdict(err, true)
	assert.True(t, fail)
	assert.Contains(t, msg, "needs root or CAP_SYS_ADMIN")
	assert.Contains(t, msg, "CI=true")

	msg, _ = verdict(ErrUnsupported, false)
	assert.Contains(t, msg, "not supported")
}

func TestChildResult(t *testing.T) {
	assert.Equal(t, resultPass, childResult("TestA", "=== RUN   TestA\n--- PASS: TestA (0.01s)\nPASS\n"))
	assert.Equal(t, resultSkip, childResult("TestA", "=== RUN   TestA\n--- SKIP: TestA (0.00s)\n"))
	// A prefix of another test's name is not a verdict for this one.
	assert.Equal(t, resultUnknown, childResult("TestA", "--- PASS: TestAB (0.01s)\n"))
	assert.Equal(t, resultUnknown, childResult("TestA", "testing: warning: no tests to run\nPASS\n"))
}

func TestErrorsAreDistinct(t *testing.T) {
	assert.False(t, errors.Is(ErrNoPrivilege, ErrUnsupported))
	assert.False(t, errors.Is(ErrNotIsolated, ErrNoPrivilege))
}
