#include "output/output_parser.h"
