package transport

// Preauth is how many connections hold a pre-login slot.
func (s *Server) Preauth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.preauth
}
