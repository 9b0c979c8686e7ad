#include "template/chat_template.h"
