package client_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// A device of Bob's follows his sync timeline while Ann sends him a
// message: the package's usage, against a server started here.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startServer() // an imsync server on a random port (below)
	defer srv.stop()

	// Trust the server's certificate (DATA/server.crt of `imsync serve`).
	pinned, err := client.PinnedTLS(srv.certPEM)
	if err != nil {
		log.Fatal(err)
	}
	var saved uint64 // the device's position, as the app saved it
	bob, err := client.Dial(ctx, client.Config{Addr: srv.addr, Token: srv.token("bob", "phone"), TLS: pinned, LastUserSeq: saved})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	ann, err := client.Dial(ctx, client.Config{Addr: srv.addr, Token: srv.token("ann", "phone"), TLS: pinned})
	if err != nil {
		log.Fatal(err)
	}
	defer ann.Close()

	// Durable when Send returns; a retry with the same ClientMsgID is not duplicated.
	sent, err := ann.Send(ctx, client.Message{To: "bob", ClientMsgID: "m-1", Text: "hi"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sent:", sent.Conversation, "seq", sent.Seq)

	for e := range bob.Entries() { // in user seq order, gaps filled
		switch m := e.Message.(type) {
		case *eventspb.MembershipChanged:
			fmt.Println(e.UserSeq, e.Type, m.ConversationId)
		case *eventspb.MessagePointer:
			fmt.Println(e.UserSeq, e.Type, m.Sender+":", string(m.Message.GetBody()))
		}
		bob.Ack(ctx, e.UserSeq) // the server now knows this device's position
		saved = e.UserSeq       // where to resume after a restart
		if e.Type == "MessagePointer" {
			break
		}
	}
	// Output:
	// sent: dm-ann~bob seq 2
	// 1 MembershipChanged dm-ann~bob
	// 2 MessagePointer ann: hi
}

// exampleServer is an in-process server: an in-memory store, the grains
// and the gateway, as `imsync serve` runs them.
type exampleServer struct {
	addr    string
	certPEM []byte
	key     *transport.Key
	stop    func()
}

func (s *exampleServer) token(user, device string) string {
	tok, err := s.key.Mint(user, device, time.Hour, time.Now())
	if err != nil {
		log.Fatal(err)
	}
	return tok
}

func startServer() *exampleServer {
	dir, err := os.MkdirTemp("", "imsync-example")
	if err != nil {
		log.Fatal(err)
	}
	store, err := events.OpenInMemory(events.Options{})
	if err != nil {
		log.Fatal(err)
	}
	svc, err := actors.Start(actors.Config{Store: store})
	if err != nil {
		log.Fatal(err)
	}
	key, err := transport.LoadOrCreateKey(dir)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := transport.LoadOrCreateCert(dir)
	if err != nil {
		log.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, transport.CertFile))
	if err != nil {
		log.Fatal(err)
	}
	srv, err := transport.NewServer(transport.Config{Service: svc, Key: key, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	return &exampleServer{addr: srv.Addr().String(), certPEM: pem, key: key, stop: func() {
		srv.Close()
		svc.Close()
		store.Close()
		os.RemoveAll(dir)
	}}
}
