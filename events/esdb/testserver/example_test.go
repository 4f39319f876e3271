package testserver_test

import (
	"context"
	"fmt"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/imsync/imsync/events/esdb/testserver"
)

func Example() {
	ctx := context.Background()
	srv, err := testserver.Start(ctx, testserver.Options{}) // in memory, random loopback port
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	conf, err := esdb.ParseConnectionString(srv.URL())
	if err != nil {
		panic(err)
	}
	conf.Logger = esdb.NoopLogging()
	client, err := esdb.NewClient(conf)
	if err != nil {
		panic(err)
	}
	defer client.Close()

	res, err := client.AppendToStream(ctx, "conv-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}},
		esdb.EventData{EventType: "MessageSent", Data: []byte("hello")})
	if err != nil {
		panic(err)
	}
	fmt.Println("appended at revision", res.NextExpectedVersion)

	stream, err := client.ReadStream(ctx, "conv-1", esdb.ReadStreamOptions{}, 10)
	if err != nil {
		panic(err)
	}
	defer stream.Close()
	e, err := stream.Recv()
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %s\n", e.Event.EventType, e.Event.Data)
	// Output:
	// appended at revision 0
	// MessageSent hello
}
