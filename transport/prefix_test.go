package transport

import (
	"net"
	"testing"
)

func TestRemotePrefix(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.9", "127.0.0.0/24"},
		{"192.0.2.200", "192.0.2.0/24"},
		{"::ffff:192.0.2.7", "192.0.2.0/24"}, // IPv4-mapped: counted as IPv4
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
	} {
		got := remotePrefix(&net.UDPAddr{IP: net.ParseIP(tc.addr), Port: 4433})
		if got.String() != tc.want {
			t.Errorf("remotePrefix(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
