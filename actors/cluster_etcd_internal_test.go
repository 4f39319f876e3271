package actors

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClusterEtcdViewSaysWhenItsRegistrationExpired: the deletion of this
// member's own key while it runs (its lease expired: the others dropped
// it) is logged as an error naming the fix; another member's, or its own
// when it leaves, is not.
func TestClusterEtcdViewSaysWhenItsRegistrationExpired(t *testing.T) {
	var log bytes.Buffer
	v := &etcdView{members: map[string]bool{}}
	v.start("chat", "me", slog.New(slog.NewTextHandler(&log, nil)))
	deleted := func(key string, rev int64) []*clientv3.Event {
		return []*clientv3.Event{{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}}}
	}
	v.seen(deleted("/imsync/chat/chat@other", 5))
	if log.Len() != 0 {
		t.Fatalf("another member leaving logged %q", log.String())
	}
	lost := v.lostChan()
	select {
	case <-lost:
		t.Fatal("lost before this member's registration went")
	default:
	}
	v.seen(deleted("/imsync/chat/chat@me", 6))
	if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "restart this node") {
		t.Fatalf("own registration expired: logged %q, want an error that says to restart", log.String())
	}
	select {
	case <-lost:
	default:
		t.Fatal("the expiry of this member's registration did not close Lost")
	}
	v.seen(deleted("/imsync/chat/chat@me", 7)) // a second deletion closes nothing twice
	if v.next != 8 {
		t.Fatalf("next revision %d after revision 7, want 8", v.next)
	}
	log.Reset()
	v.leave()
	v.seen(deleted("/imsync/chat/chat@me", 8))
	if log.Len() != 0 {
		t.Fatalf("leaving logged %q", log.String())
	}
}
