//go:build cluster

package actors

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func newTestView(t *testing.T) (*etcdView, *clientv3.Client) {
	t.Helper()
	c := etcdtest.Client(t, etcdtest.Start(t))
	v := &etcdView{kv: c.KV, watcher: c.Watcher}
	v.start("chat", "self", nil)
	return v, c
}

// nextChange waits for the watch's next response.
func nextChange(t *testing.T, ch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case resp, ok := <-ch:
		if !ok {
			t.Fatal("the watch ended")
		}
		return resp
	case <-time.After(10 * time.Second):
		t.Fatal("no change in 10 s")
	}
	return clientv3.WatchResponse{}
}

func changes(resp clientv3.WatchResponse) map[string]string {
	out := map[string]string{}
	for _, ev := range resp.Events {
		out[string(ev.Kv.Key)] = ev.Type.String()
	}
	return out
}

// TestClusterEtcdViewWatchesFromTheListing: a member that registers or leaves
// between the provider's listing and its watch is still seen; a cluster
// whose name extends this one's is not part of it; the provider's later
// listings (for its leader election) are empty.
func TestClusterEtcdViewWatchesFromTheListing(t *testing.T) {
	v, c := newTestView(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put := func(key string) {
		if _, err := c.Put(ctx, key, `{}`); err != nil {
			t.Fatal(err)
		}
	}
	put("/imsync/chat/chat@a")
	put("/imsync/chat2/chat2@x")
	listed, err := v.Get(ctx, "/imsync/chat", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(listed.Kvs) != 1 || string(listed.Kvs[0].Key) != "/imsync/chat/chat@a" {
		t.Fatalf("listed %v, want chat@a alone", listed.Kvs)
	}
	// Later listings only feed the provider's leader election, whose
	// reading of this member's metadata races with its keep-alive: empty.
	if again, err := v.Get(ctx, "/imsync/chat", clientv3.WithPrefix()); err != nil || len(again.Kvs) != 0 {
		t.Fatalf("listed again: %v (%v), want nothing", again, err)
	}
	// Between the listing and the watch:
	put("/imsync/chat/chat@b")
	if _, err := c.Delete(ctx, "/imsync/chat/chat@a"); err != nil {
		t.Fatal(err)
	}
	put("/imsync/chat2/chat2@y")
	w := v.Watch(ctx, "/imsync/chat", clientv3.WithPrefix())
	got := map[string]string{}
	for len(got) < 2 {
		for k, e := range changes(nextChange(t, w)) {
			got[k] = e
		}
	}
	want := map[string]string{"/imsync/chat/chat@b": "PUT", "/imsync/chat/chat@a": "DELETE"}
	for k, e := range want {
		if got[k] != e {
			t.Fatalf("changes %v, want %v", got, want)
		}
	}
	put("/imsync/chat/chat@c")
	if ch := changes(nextChange(t, w)); len(ch) != 1 || ch["/imsync/chat/chat@c"] != "PUT" {
		t.Fatalf("changes %v, want chat@c joining alone (nothing of chat2)", ch)
	}
}

// TestClusterEtcdViewRelistsAfterCompaction: when etcd compacted past the
// revision the provider saw, the watch cannot replay the changes; the view
// lists the members again and delivers the difference.
func TestClusterEtcdViewRelistsAfterCompaction(t *testing.T) {
	v, c := newTestView(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	registerAndList(t, ctx, c, v, "/imsync/chat/chat@a", "/imsync/chat/chat@b")
	if _, err := c.Delete(ctx, "/imsync/chat/chat@a"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Put(ctx, "/imsync/chat/chat@c", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	w := v.Watch(ctx, "/imsync/chat", clientv3.WithPrefix())
	got := changes(nextChange(t, w))
	if got["/imsync/chat/chat@a"] != "DELETE" || got["/imsync/chat/chat@c"] != "PUT" {
		t.Fatalf("after the compaction: %v, want chat@a gone and chat@c there", got)
	}
	if _, err := c.Put(ctx, "/imsync/chat/chat@d", `{}`); err != nil {
		t.Fatal(err)
	}
	if ch := changes(nextChange(t, w)); len(ch) != 1 || ch["/imsync/chat/chat@d"] != "PUT" {
		t.Fatalf("changes %v, want chat@d joining, watched again after the listing", ch)
	}
}

// relistAfter registers this member ("chat@self") and another, lets the view
// list them, applies change to etcd, compacts past it and returns the
// relisted difference with the view's Lost channel.
func relistAfter(t *testing.T, leaving bool, change func(ctx context.Context, c *clientv3.Client)) (map[string]string, <-chan struct{}) {
	t.Helper()
	v, c := newTestView(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	registerAndList(t, ctx, c, v, "/imsync/chat/chat@self", "/imsync/chat/chat@b")
	lost := v.lostChan()
	if leaving {
		v.leave()
	}
	change(ctx, c)
	r, err := c.Put(ctx, "/imsync/chat/chat@x", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	return changes(nextChange(t, v.Watch(ctx, "/imsync/chat", clientv3.WithPrefix()))), lost
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestClusterEtcdViewRelistLosesOwnExpiry: this member's registration expired
// while it could not watch and etcd compacted past the deletion: the
// relisting finds its key gone and closes Lost (the others dropped it).
func TestClusterEtcdViewRelistLosesOwnExpiry(t *testing.T) {
	got, lost := relistAfter(t, false, func(ctx context.Context, c *clientv3.Client) {
		if _, err := c.Delete(ctx, "/imsync/chat/chat@self"); err != nil {
			t.Fatal(err)
		}
	})
	if got["/imsync/chat/chat@self"] != "DELETE" {
		t.Fatalf("relisted %v, want chat@self deleted", got)
	}
	if !isClosed(lost) {
		t.Fatal("own registration gone at the relisting, but Lost is open")
	}
}

// TestClusterEtcdViewRelistLosesOwnReregistration: the provider's keep-alive
// registered this member again under a new lease after the first expired;
// the relisting sees the key with a newer CreateRevision: lost all the same.
func TestClusterEtcdViewRelistLosesOwnReregistration(t *testing.T) {
	_, lost := relistAfter(t, false, func(ctx context.Context, c *clientv3.Client) {
		if _, err := c.Delete(ctx, "/imsync/chat/chat@self"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, "/imsync/chat/chat@self", `{}`); err != nil {
			t.Fatal(err)
		}
	})
	if !isClosed(lost) {
		t.Fatal("own key created again under a new lease, but Lost is open")
	}
}

// TestClusterEtcdViewRelistKeepsLiveOrLeavingMember: a relisting that finds this
// member's first registration (its value refreshed), or that runs while
// it deregisters, does not close Lost.
func TestClusterEtcdViewRelistKeepsLiveOrLeavingMember(t *testing.T) {
	_, lost := relistAfter(t, false, func(ctx context.Context, c *clientv3.Client) {
		if _, err := c.Put(ctx, "/imsync/chat/chat@self", `{"refreshed":true}`); err != nil {
			t.Fatal(err)
		}
	})
	if isClosed(lost) {
		t.Fatal("own registration still there, but Lost closed")
	}
	_, lost = relistAfter(t, true, func(ctx context.Context, c *clientv3.Client) {
		if _, err := c.Delete(ctx, "/imsync/chat/chat@self"); err != nil {
			t.Fatal(err)
		}
	})
	if isClosed(lost) {
		t.Fatal("this member deregistered, but Lost closed")
	}
}

// TestClusterEtcdViewBoundsCallsWhenEtcdDown: the provider calls etcd without a
// deadline (its deregistration at shutdown, its registration and listing
// at start); etcd's client would wait for a connection for ever, so with
// etcd unreachable every such call through the view returns an error
// within etcdDialTimeout instead.
func TestClusterEtcdViewBoundsCallsWhenEtcdDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there: etcd is down
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := &etcdView{kv: c.KV, watcher: c.Watcher}
	v.start("chat", "self", nil)
	lease := boundedLease{c.Lease}
	calls := map[string]func() error{
		"delete": func() error { _, err := v.Delete(context.TODO(), "/imsync/chat/chat@self"); return err },
		"put":    func() error { _, err := v.Put(context.TODO(), "/imsync/chat/chat@self", `{}`); return err },
		"list":   func() error { _, err := v.Get(context.TODO(), "/imsync/chat", clientv3.WithPrefix()); return err },
		"grant":  func() error { _, err := lease.Grant(context.TODO(), 3); return err },
	}
	done := make(chan string, len(calls))
	for name, call := range calls {
		go func() {
			if err := call(); err == nil {
				t.Errorf("%s with etcd down: no error", name)
			}
			done <- name
		}()
	}
	deadline := time.After(3 * etcdDialTimeout)
	for range calls {
		select {
		case <-done:
		case <-deadline:
			t.Fatalf("a call to etcd still blocked after %v with etcd down: start or shutdown would hang", 3*etcdDialTimeout)
		}
	}
}

// TestClusterEtcdViewStopEndsTheWatch: the provider's watch context is never
// cancelled when its deregistration fails; stop ends the view's watch
// (and its retries against a closed client) all the same.
func TestClusterEtcdViewStopEndsTheWatch(t *testing.T) {
	v, c := newTestView(t)
	if _, err := v.Get(context.Background(), "/imsync/chat", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	w := v.Watch(context.Background(), "/imsync/chat", clientv3.WithPrefix())
	v.stop()
	c.Close()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-w:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the watch still runs 10 s after stop")
		}
	}
}

// stalledWatcher delivers nothing until its watch is cancelled, as a watch
// stream that keeps presenting a login token etcd forgot across a restart.
type stalledWatcher struct{ clientv3.Watcher }

func (stalledWatcher) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// TestClusterEtcdViewNoticesWithoutItsWatch: with its watch stalled, the
// view still learns of a member that joined and one that left, and that
// this member's own registration expired, from its periodic listing.
func TestClusterEtcdViewNoticesWithoutItsWatch(t *testing.T) {
	c := etcdtest.Client(t, etcdtest.Start(t))
	v := &etcdView{kv: c.KV, watcher: stalledWatcher{c.Watcher}}
	v.start("chat", "self", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	registerAndList(t, ctx, c, v, "/imsync/chat/chat@self", "/imsync/chat/chat@b")
	lost := v.lostChan()
	watch := v.Watch(ctx, "/imsync/chat", clientv3.WithPrefix())
	if _, err := c.Put(ctx, "/imsync/chat/chat@c", `{}`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "/imsync/chat/chat@b"); err != nil {
		t.Fatal(err)
	}
	got := changes(nextChange(t, watch))
	if len(got) != 2 || got["/imsync/chat/chat@c"] != "PUT" || got["/imsync/chat/chat@b"] != "DELETE" {
		t.Fatalf("listed %v, want chat@c joined and chat@b gone", got)
	}
	if isClosed(lost) {
		t.Fatal("own registration still there, but Lost closed")
	}
	if _, err := c.Delete(ctx, "/imsync/chat/chat@self"); err != nil {
		t.Fatal(err)
	}
	if got := changes(nextChange(t, watch)); got["/imsync/chat/chat@self"] != "DELETE" {
		t.Fatalf("listed %v, want chat@self gone", got)
	}
	if !isClosed(lost) {
		t.Fatal("own registration gone, but Lost is open")
	}
}

// registerAndList registers keys in etcd, then lets the view list the
// members (the provider's first listing).
func registerAndList(t *testing.T, ctx context.Context, c *clientv3.Client, v *etcdView, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, err := c.Put(ctx, k, `{}`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Get(ctx, "/imsync/chat", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
}

// stuckKV fails every call, as a client that keeps presenting a login
// token etcd forgot in a restart.
type stuckKV struct{ clientv3.KV }

func (stuckKV) Get(ctx context.Context, _ string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return nil, context.DeadlineExceeded
}

// TestClusterEtcdViewListsWithAFreshClient: when the listing fails again
// and again (and the watch is stalled), the view lists with a fresh
// client, and so learns that this member's registration expired.
func TestClusterEtcdViewListsWithAFreshClient(t *testing.T) {
	c := etcdtest.Client(t, etcdtest.Start(t))
	var fresh atomic.Int32
	v := &etcdView{kv: c.KV, watcher: stalledWatcher{c.Watcher}, newChecker: func() (clientv3.KV, io.Closer, error) {
		fresh.Add(1)
		return c.KV, io.NopCloser(nil), nil
	}}
	v.start("chat", "self", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	registerAndList(t, ctx, c, v, "/imsync/chat/chat@self", "/imsync/chat/chat@b")
	lost := v.lostChan()
	v.kv = stuckKV{c.KV} // the client is stuck from here on
	watch := v.Watch(ctx, "/imsync/chat", clientv3.WithPrefix())
	if _, err := c.Delete(ctx, "/imsync/chat/chat@self"); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-watch:
		if got := changes(resp); got["/imsync/chat/chat@self"] != "DELETE" {
			t.Fatalf("listed %v, want chat@self gone", got)
		}
	case <-ctx.Done():
		t.Fatal("the view never listed the members again")
	}
	if !isClosed(lost) || fresh.Load() != 1 {
		t.Fatalf("own registration gone: Lost closed %v, fresh clients %d (want 1)", isClosed(lost), fresh.Load())
	}
}
