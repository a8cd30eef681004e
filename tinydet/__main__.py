import sys

from tinydet.cli import main

sys.exit(main())
