// placeholder replaced by the server sources
