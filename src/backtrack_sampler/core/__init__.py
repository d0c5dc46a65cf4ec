"""The backend-free core: the engine, its typed decisions and events, sampling."""
