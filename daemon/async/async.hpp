// The whole coroutine runtime in one include: asyncio's vocabulary over libevent.
#pragma once

#include "async/event.hpp"
#include "async/every.hpp"
#include "async/future.hpp"
#include "async/generator.hpp"
#include "async/group.hpp"
#include "async/io.hpp"
#include "async/loop.hpp"
#include "async/process.hpp"
#include "async/queue.hpp"
#include "async/semaphore.hpp"
#include "async/spawn.hpp"
#include "async/task.hpp"
#include "async/thread_pool.hpp"
#include "async/time.hpp"
#include "async/weighted_permits.hpp"
