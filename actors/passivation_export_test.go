package actors

// ActiveGrains is how many grains of kind are active on this member (the
// count protoactor-go's placement keeps: up at activation, down once the
// grain has stopped). Tests poll it to see grains passivate.
func (s *Service) ActiveGrains(kind string) int {
	return int(s.cluster.GetClusterKind(kind).Count())
}
