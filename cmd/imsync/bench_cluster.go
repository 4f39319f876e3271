package main

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// benchNodes is `imsync bench --server a,b,c`: the 1:1 and group scenarios
// with the devices spread over the first one, two, ... of the cluster's
// nodes in turn (device i connects to node i mod k). The grains are placed
// over every node of the cluster throughout: k changes where the devices'
// connections, and so the gateway work and the pushes' last hop, are.
func (b *bench) benchNodes(ctx context.Context, out io.Writer, nodes []string, run map[string]bool, pairs, groupSize, groupSenders int) error {
	defer func() { b.addrs = nil }()
	for k := 1; k <= len(nodes); k++ {
		b.addrs = nodes[:k]
		fmt.Fprintf(out, "devices spread over %d of the %d nodes (%s)\n", k, len(nodes), strings.Join(nodes[:k], ", "))
		for _, sc := range []struct {
			name           string
			users, senders int
		}{{"direct", pairs, pairs}, {"group", groupSize, groupSenders}} {
			if !run[sc.name] {
				continue
			}
			r, err := b.scenario(ctx, sc.name, sc.users, sc.senders)
			if err != nil {
				return err
			}
			r.name = fmt.Sprintf("%s, %d node(s)", sc.name, k)
			r.print(out, 0)
		}
	}
	return nil
}

// serverList splits --server's comma-separated addresses.
func serverList(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}
