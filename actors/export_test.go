package actors

// Crash stops this member the way a crash would: no goodbye to the others,
// no hand-over, no checkpoints. The membership provider then drops it, as a
// real provider does when the member's lease or TTL runs out.
func (s *Service) Crash() {
	s.closing.Do(func() {
		s.conns.stop() // a dead process does nothing more
		if s.watch != nil {
			s.watch.stop()
		}
		s.cluster.Shutdown(false)
		s.cfg.Provider.Shutdown(false)
	})
}
