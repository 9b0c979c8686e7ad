#include "scheduler/scheduler.h"
