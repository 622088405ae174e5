package router

type shadow struct{}
