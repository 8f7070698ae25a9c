package replication

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCreateSaveGet(t *testing.T) {
	c := startSessions(t, 3, nil)
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	r := h.Route()
	require.Equal(t, a.s.NodeID(), r.Primary)
	require.NotEmpty(t, r.Secondary, "3 nodes: the session has a secondary")
	require.NotEqual(t, r.Primary, r.Secondary)
	set(t, a, h, "user", "ana")

	h2, v := mustGet(t, a, h.ID(), "user")
	require.Equal(t, "ana", v)
	require.Equal(t, h.ID(), h2.ID())

	_, sec := c.byID(r.Secondary)
	e := sec.s.lookup(r.Key)
	require.NotNil(t, e)
	st := e.state()
	require.Equal(t, roleSecondary, st.role)
	require.Equal(t, "ana", string(st.attrs.val("user")))
	require.Equal(t, uint64(1), st.version)
}
