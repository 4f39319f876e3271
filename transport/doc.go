// Package transport is imsync's edge: the QUIC gateway that devices
// connect to, device tokens, and the server certificate.
//
// # Usage
//
//	key, _ := transport.LoadOrCreateKey(dataDir)   // the development token key
//	jwks, _ := transport.LoadJWKS("jwks.json")     // the app backend's public keys; jwks.Reload() on SIGHUP
//	cert, _ := transport.LoadOrCreateCert(dataDir, "chat.example.com") // self-signed, kept; clients pin it
//	reset, _ := transport.LoadOrCreateResetKey(dataDir) // a restart resets old connections at once
//	srv, err := transport.NewServer(transport.Config{
//		Service:           svc, // an *actors.Service
//		Key:               key,
//		JWKS:              jwks,
//		TokenRules:        transport.TokenRules{Audience: "chat"},
//		TLS:               &tls.Config{Certificates: []tls.Certificate{cert}},
//		StatelessResetKey: reset,
//	})
//	if err != nil { ... }
//	if err := srv.Listen("127.0.0.1:7400"); err != nil { ... }
//	defer srv.Close()
//
//	token, _ := key.MintFor("ann", "phone", 24*time.Hour, time.Now(),
//		transport.TokenRules{Audience: "chat"}) // a development JWT for a device
//
// Device tokens are EdDSA JWTs (docs/tokens.md): the server checks them
// with the JWKS keys and the development key, and closes a connection when
// its token expires unless the client re-authenticated with a newer one.
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
