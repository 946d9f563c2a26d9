from valbench import hookimpl


@hookimpl
def register_datasets(register):
    pass
