package search

import "github.com/imsync/imsync/projections"

func init() {
	projections.Register(Name, func() projections.Projection { return New() })
}
