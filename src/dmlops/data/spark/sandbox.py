"""User SQL on the Spark engine: checked before it runs, since Spark has no switch that keeps an
expression from reaching outside the data.

A column expression, a quarantine rule, a schema check or a feature mean is one Spark SQL expression.
Each is parsed with Spark's own parser and refused, before Spark evaluates anything, when it holds:

- a subquery (``(SELECT ...)``, ``IN (SELECT ...)``, ``EXISTS``): a subquery reads tables and files
  (``SELECT * FROM text.`/etc/passwd```, ``read_files(...)``), which an expression over the step's own
  columns never needs;
- ``reflect``, ``java_method`` or ``try_reflect``: they call any static Java method (read files, open
  sockets, run programs);
- ``from_protobuf``/``to_protobuf``: their descriptor-file argument reads a file of the driver;
- a function that is not one of Spark's built-in functions (a catalog or user-registered function).
"""

from __future__ import annotations

from dmlops.data.errors import DataError
from dmlops.data.spark.session import spark_session

BLOCKED_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect", "from_protobuf", "to_protobuf"})
# Catalyst expression classes that hold a query plan (org.apache.spark.sql.catalyst.expressions.
# SubqueryExpression and its kin).
_SUBQUERY_CLASSES = ("ScalarSubquery", "Exists", "ListQuery", "InSubquery", "LateralSubquery",
                     "UnresolvedTableValuedFunction", "FunctionTableSubqueryArgumentExpression")


def check_expression(text: str, where: str) -> str:
    """``text`` when it is one Spark SQL expression that reads only the row's columns; else a DataError
    naming ``where`` and what was refused."""
    session = spark_session()
    try:
        parsed = session._jsparkSession.sessionState().sqlParser().parseExpression(text)
    except Exception as error:  # Spark's ParseException, as pyspark raises it: parsing only, nothing ran
        message = " ".join(str(error).split())
        raise DataError(f"{where}: {text!r} is not a Spark SQL expression: {message}") from None
    builtin = session._jvm.org.apache.spark.sql.catalyst.analysis.FunctionRegistry.builtin()
    stack = [parsed]
    while stack:
        node = stack.pop()
        kind = node.getClass().getSimpleName()
        if kind in _SUBQUERY_CLASSES:
            raise DataError(f"{where}: {text!r} holds a subquery; the Spark engine takes expressions over the "
                            "dataset's columns only (a subquery could read other files)")
        if kind == "UnresolvedFunction":
            parts = [str(part) for part in _scala_list(node.nameParts())]
            name = parts[-1].lower()
            if name in BLOCKED_FUNCTIONS:
                raise DataError(f"{where}: {text!r} calls {name}, which the Spark engine refuses (it reaches "
                                "outside the data: Java methods or files)")
            identifier = session._jvm.org.apache.spark.sql.catalyst.FunctionIdentifier(name)
            if len(parts) > 1 or not builtin.functionExists(identifier):
                raise DataError(f"{where}: {text!r} calls {'.'.join(parts)}, not one of Spark's built-in functions")
        stack.extend(_scala_list(node.children()))
    return text


def _scala_list(sequence) -> list:
    iterator = sequence.iterator()
    items = []
    while iterator.hasNext():
        items.append(iterator.next())
    return items
