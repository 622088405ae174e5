package upstream

type outlierHost struct{}
