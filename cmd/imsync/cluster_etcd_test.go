//go:build cluster

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/actors/etcdtest"
	"github.com/imsync/imsync/transport/client"
)

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metric reads a gauge from node i's /metrics, summed over its labels.
func (f *clusterFixture) metric(i int, name string) (float64, error) {
	resp, err := http.Get("http://" + f.nodes[i].ops + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %v", name, line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("node %d has no metric %s", i+1, name)
	}
	return sum, sc.Err()
}

// waitMembers waits until each of the given nodes counts want members, and
// returns how long that took.
func (f *clusterFixture) waitMembers(want int, within time.Duration, nodes ...int) time.Duration {
	f.t.Helper()
	start := time.Now()
	for {
		behind := -1
		var seen float64
		for _, i := range nodes {
			if n, err := f.metric(i, "imsync_cluster_members"); err != nil || n != float64(want) {
				behind, seen = i, n
				break
			}
		}
		if behind < 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			f.t.Fatalf("node %d counts %v members after %s, want %d", behind+1, seen, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterNodeJoinsThroughEtcd: three nodes registered in etcd, then a
// fourth that no other node names: the others take it in without a
// restart, grains are placed on it, a device connected to it receives
// what is sent through node 1 (and the other way round). SIGKILLed, it
// leaves the others' topology when its lease expires, and they serve
// everything again: every earlier send, sent again through them, is a
// duplicate at its seq; new sends in every conversation are acknowledged
// and pushed; the store holds each acknowledged message once at its seq.
func TestClusterNodeJoinsThroughEtcd(t *testing.T) {
	began := time.Now()
	f := startClusterWith(t, etcdtest.Start(t))
	f.waitMembers(3, 30*time.Second, 0, 1, 2)
	t.Logf("three nodes up in %s", time.Since(began).Round(time.Millisecond))

	f.addNode()
	f.startNode(3)
	took := f.waitMembers(4, 30*time.Second, 0, 1, 2, 3)
	t.Logf("node 4 started; every node counted four members %s after it listened", took.Round(time.Millisecond))

	h, probes := &history{}, 0
	took = f.crossNodePush(h, "ann", "bob", 0, 3, &probes)
	t.Logf("sent through node 1, on node 4's connection %s after the acknowledgement", took.Round(time.Microsecond))
	took = f.crossNodePush(h, "bob", "ann", 3, 1, &probes)
	t.Logf("sent through node 4, on node 2's connection %s after the acknowledgement", took.Round(time.Microsecond))

	// Users in a ring, each sending through node 1 to the next: their
	// conversation, user and device grains spread over the four nodes.
	const ring = 16
	user := func(i int) string { return fmt.Sprintf("u%02d", i%ring) }
	sendAs := func(c *client.Client, from, to, cid string) *op {
		t.Helper()
		o := h.begin(&op{kind: opSend, user: from, conv: directID(from, to), to: to, cid: cid})
		if err := retryUnavailable(func() error {
			return withTimeout(20*time.Second, func(ctx context.Context) error { return o.do(ctx, h, c) })
		}); err != nil {
			t.Fatalf("%v: %v", o, err)
		}
		return o
	}
	var before []*op
	for i := range ring {
		c := f.dial(user(i), "phone", 0, true, 0)
		before = append(before, sendAs(c, user(i), user(i+1), "before"))
		c.Close()
	}
	grains, err := f.metric(3, "imsync_grains_active")
	if err != nil {
		t.Fatal(err)
	}
	if grains == 0 {
		t.Fatal("no grain active on node 4")
	}
	t.Logf("%v grains active on node 4", grains)

	f.nodes[3].kill9()
	left := f.waitMembers(3, 30*time.Second, 0, 1, 2)
	t.Logf("node 4 SIGKILLed; it left the three others' topology after %s", left.Round(time.Millisecond))

	// Everything is served again: each earlier send, sent again through
	// another node, is a duplicate at its seq; a new send in each
	// conversation reaches the receiver's connection.
	for i := range ring {
		c := f.dial(user(i), "phone", (i+1)%3, false, 0)
		again := *before[i]
		if err := retryUnavailable(func() error {
			return withTimeout(20*time.Second, func(ctx context.Context) error { return again.do(ctx, &history{}, c) })
		}); err != nil {
			t.Fatalf("resend of %v: %v", before[i], err)
		}
		if !again.dup || again.answer != before[i].answer {
			t.Fatalf("resend of %v acknowledged at %d: answered %d, duplicate %v", before[i], before[i].answer, again.answer, again.dup)
		}
		c.Close()
	}
	for i := range ring {
		f.crossNodePush(h, user(i), user(i+1), i%3, (i+1)%3, &probes)
	}
	store := f.openStore()
	defer store.Close()
	h.checkConversations(t, store)

	// A node whose registration expires (its lease revoked here, as etcd
	// does when no keep-alive came within the TTL) is dropped for good: it
	// stops with status 5, for its supervisor to start it again.
	expireRegistration(t, f.etcd, f.nodes[2].advertise)
	exited := make(chan error, 1)
	go func() { exited <- f.nodes[2].cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUnavailable {
			t.Fatalf("node 3 ended with %v after its registration expired, want exit status %d", err, exitUnavailable)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node 3 still runs 30 s after its registration expired")
	}
	f.waitMembers(2, 30*time.Second, 0, 1)
	t.Logf("%d operations; %s", len(h.snapshot()), time.Since(began).Round(time.Millisecond))
}

// expireRegistration revokes the etcd lease of the node advertised at
// advertise, as etcd does when the node's keep-alives stop.
func expireRegistration(t *testing.T, endpoint, advertise string) {
	t.Helper()
	c := etcdtest.Client(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, actors.EtcdKeyPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(advertise)
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), `"port":`+port+`,`) {
			if _, err := c.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no registration of %s in etcd", advertise)
}
