thing = object()
