package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/api"
	"github.com/imsync/imsync/transport/transporttest"
	"github.com/imsync/imsync/transport/wire"
)

// recordFailing is a store whose appends to the revocations stream fail
// while fail is set.
type recordFailing struct {
	events.Store
	fail atomic.Bool
}

func (s *recordFailing) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	if s.fail.Load() && stream == transport.RevocationsStream {
		return events.WriteResult{}, errors.New("store unavailable")
	}
	return s.Store.AppendToStream(ctx, stream, expected, evs...)
}

// A disconnect the store fails to record answers 503 UNAVAILABLE (the
// error shape, safe to repeat) saying how many connections it closed
// already; the device's connection is closed all the same.
func TestDisconnectUnrecordedSaysWhatClosed(t *testing.T) {
	store := &recordFailing{Store: teststore.Open(t)}
	dir := t.TempDir()
	svc := transporttest.Service(t, actors.Config{Store: store.Store})
	rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	revs, err := transport.OpenRevocations(rctx, store, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { revs.Close() })
	gw := transporttest.Listen(t, dir, transport.Config{Service: svc, Revocations: revs})
	a, err := api.New(api.Config{Service: svc, Gateway: gw.Server, Key: []byte(apiKey)})
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{svc: svc, gateway: gw.Server, api: a, key: gw.Key, tls: gw.TLS, dir: dir}
	st.http = httptest.NewServer(a)
	t.Cleanup(st.http.Close)

	phone, err := st.dial(t, "bob", "phone", time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	store.fail.Store(true)
	status, e := st.call(t, "POST", "/v1/users/bob/devices/phone/disconnect", nil, nil)
	if status != http.StatusServiceUnavailable || e.Code != uint32(actors.Code_UNAVAILABLE) || !strings.Contains(e.Error, "1 connection(s)") || !strings.Contains(e.Error, "store unavailable") {
		t.Fatalf("disconnect with a failing store: %d %+v, want 503 naming the closed connection and the failure", status, e)
	}
	var app *quic.ApplicationError
	if err := ended(t, phone); !errors.As(err, &app) || app.ErrorCode != wire.CodeDisconnected {
		t.Fatalf("phone ended with %v, want code %d", err, wire.CodeDisconnected)
	}
}
