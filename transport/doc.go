// Package transport is imsync's edge: the QUIC gateway that devices
// connect to, device tokens, and the server certificate.
//
// # Usage
//
//	key, _ := transport.LoadOrCreateKey(dataDir)   // signs device tokens
//	cert, _ := transport.LoadOrCreateCert(dataDir) // self-signed, kept; clients pin it
//	reset, _ := transport.LoadOrCreateResetKey(dataDir) // a restart resets old connections at once
//	srv, err := transport.NewServer(transport.Config{
//		Service:           svc, // an *actors.Service
//		Key:               key,
//		TLS:               &tls.Config{Certificates: []tls.Certificate{cert}},
//		StatelessResetKey: reset,
//	})
//	if err != nil { ... }
//	if err := srv.Listen("127.0.0.1:7400"); err != nil { ... }
//	defer srv.Close()
//
//	token, _ := key.Mint("ann", "phone", 24*time.Hour, time.Now()) // for a device
//
// To stop gracefully, Drain instead of Close: devices are told to go
// away, finish their calls and leave, within the context's deadline.
//
// Metrics (NewMetrics) go on a Prometheus registry of their own: pass them
// as Config.Metrics, give Metrics.Actors() to actors.Config.Metrics and
// Metrics.InstrumentStore(store) to the grains, and serve Registry() with
// package ops (docs/operations.md lists every series).
//
// The protocol is in package wire and docs/protocol.md; the Go client
// library is package client, which links none of this.
package transport
