"""Entry of the runner host: `python -I <src>/codeactions/runner/host/__main__.py <fd>`.

The API starts it by path on the runtime interpreter, where codeactions is not installed (and
`-I` puts no script dir on the path): the package comes from this checkout's src/, whichever
checkout started it. `python -I -m codeactions.runner.host <fd>` works too where it is installed.
"""

import os
import sys

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, SRC)

from codeactions.runner.host.supervisor import main  # noqa: E402

main()
