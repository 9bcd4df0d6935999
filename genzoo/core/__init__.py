"""genzoo's core: interfaces, registry, plugins, trainer, runs. It never imports a family."""
