"""Generated gRPC stubs; imported only by the gRPC edge of devplugin_core."""
