raise ImportError("this blueprint package is broken on purpose")
