//go:build !linux

package main

// trimStartupPages is Linux only; elsewhere the start-up pages stay.
func trimStartupPages() (before, after int, err error) { return 0, 0, nil }
