// Package transporttest starts real gateways for tests: an actor service
// on the test store and a QUIC server on a random loopback port, with a
// fresh key and certificate and the TLS config a client needs to trust it.
//
//	svc := transporttest.Service(t, actors.Config{}) // on teststore.Open(t)
//	gw := transporttest.Listen(t, "", transport.Config{Service: svc})
//	tok, _ := gw.Key.Mint("ann", "phone", time.Hour, time.Now())
//	c, err := client.Dial(ctx, client.Config{Addr: gw.Addr, Token: tok, TLS: gw.TLS})
//
// Everything it starts closes when the test ends.
package transporttest
