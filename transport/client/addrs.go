package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
)

// addrTry bounds one address's handshake when there are others to try: a
// node that is down does not answer at all, and the next one may.
const addrTry = 3 * time.Second

// addrs is Addr (which may list several, comma-separated) then Addrs,
// without blanks or repeats.
func (cfg *Config) addrs() []string {
	var out []string
	for _, a := range append(strings.Split(cfg.Addr, ","), cfg.Addrs...) {
		if a = strings.TrimSpace(a); a != "" && !contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// passOver makes the next dial start with the address after the one that
// answered last: after a lost connection, that node is likely down (a
// crash, a restart, a drain), and a node that is down costs addrTry.
func (c *Client) passOver() {
	if n := len(c.cfg.addrs()); n > 1 {
		c.addrAt.Store((c.addrAt.Load() + 1) % int32(n))
	}
}

// dial connects to the first address that answers, starting with the one
// that answered last time (then Addr's first).
func (c *Client) dial(ctx context.Context, t *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
	addrs := c.cfg.addrs()
	if len(addrs) == 0 {
		return nil, errors.New("client: no server address (Config.Addr)")
	}
	if len(addrs) == 1 {
		qc, err := quic.DialAddr(ctx, addrs[0], t, qcfg)
		if err != nil {
			return nil, fmt.Errorf("client: connect %s: %w", addrs[0], err)
		}
		return qc, nil
	}
	first := int(c.addrAt.Load()) % len(addrs)
	var errs []error
	for i := range addrs {
		at := (first + i) % len(addrs)
		try, cancel := context.WithTimeout(ctx, addrTry)
		qc, err := quic.DialAddr(try, addrs[at], t, qcfg)
		cancel()
		if err == nil {
			c.addrAt.Store(int32(at))
			return qc, nil
		}
		errs = append(errs, fmt.Errorf("connect %s: %w", addrs[at], err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("client: no server answered: %w", errors.Join(errs...))
}
