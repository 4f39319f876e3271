package esdb_test

import (
	"context"
	"fmt"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/esdb/testserver"
)

func Example() {
	ctx := context.Background()
	srv, err := testserver.Start(ctx, testserver.Options{}) // or a real EventStoreDB
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	store, err := esdb.Open(ctx, srv.URL(), esdb.Options{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	res, err := store.AppendToStream(ctx, "conv-c1", events.NoStream,
		events.EventData{Type: "Text", Data: []byte("hello")})
	if err != nil {
		panic(err)
	}
	_, err = store.AppendToStream(ctx, "conv-c1", events.NoStream, events.EventData{Type: "Text"})
	fmt.Println(res.NextExpected, err)
	// Output: 0 events: wrong expected revision on "conv-c1": expected no stream, stream is at revision 0
}
