// placeholder until the tokenizer lands
#include "tokenizer/tokenizer.h"
