module github.com/qcache-go/qcache

go 1.25

require (
	github.com/stretchr/testify v1.12.1 // indirect
	go.uber.org/goleak v1.3.0
)
