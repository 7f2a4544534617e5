package qcachetest_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}
