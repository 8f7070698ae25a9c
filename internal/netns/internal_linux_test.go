//go:build linux

package netns

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRouteRequestLayout(t *testing.T) {
	b := newRouteRequest(7, [4]byte{224, 0, 0, 0}, 4, 1)
	require.Len(t, b, 16+12+8+8)
	ne := binary.NativeEndian
	assert.Equal(t, uint32(len(b)), ne.Uint32(b[0:]), "nlmsg_len")
	assert.Equal(t, uint32(7), ne.Uint32(b[8:]), "nlmsg_seq")
	assert.Equal(t, byte(4), b[17], "rtm_dst_len")
	assert.Equal(t, []byte{224, 0, 0, 0}, b[32:36], "RTA_DST payload")
	assert.Equal(t, uint32(1), ne.Uint32(b[40:]), "RTA_OIF payload")
}
