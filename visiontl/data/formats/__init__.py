"""Annotation formats, each a module (or package) read into and written from
`visiontl.data.annotations.AnnotationSet`. `registry` names them all and dispatches to them: see its docstring
for what a format provides and what its source path means. This package imports no reader: the CLI parser and
the config schema import the registry, and must start fast."""
