/*
 * spaceport's deployment lock, format 2, checked by spin. README.md in this folder says
 * what is modelled, what is abstracted and why; check.sh runs the checks.
 *
 * Storage: the status folder S. Only S/lock is shared between processes; every other name a
 * step touches (S/lock.new.<d>, S/lock.release.<d>, S/lock.stale.<d>, S/lock.broken-*) is
 * unique to the process that uses it, so it is a local variable here. A lock record is the
 * deployment id written in it (1..N); NONE = no file.
 *
 * One atomic block = one storage call on S/lock (read, rename, rename_noreplace, unlink).
 * A call that touches only a name private to its caller is folded into the neighbouring
 * step: nobody else can see or change that name, so the call commutes with every step of
 * every other process, and merging it removes no interleaving another process could observe.
 * Between any two atomic blocks any other process may take any number of steps: that is the
 * stall of any length between two storage calls.
 *
 * Variants (spin -DNAME):
 *   (none)        format 2 as specified for issue 9 (lock-protocol.md of the lead).
 *   NO_GIVEBACK   release and stale takeover never give a record back: a record that is not
 *                 the one they meant to remove is set aside as broken. (NO_RELEASE_GIVEBACK,
 *                 NO_STALE_GIVEBACK: the same for one of the two only.)
 *   PRECHECK      release and stale takeover read S/lock just before moving it, and move
 *                 nothing if it is not the record they expect (ours / h's).
 *   V1            the old protocol: heartbeat = read S/lock, check it is ours, rename a fresh
 *                 copy over it; release = read S/lock, check it is ours, unlink it.
 * Extra checks and switches:
 *   CHECK_RELEASE_CLAIM  with give-back: the spec's claim that release sets another
 *                 deployment's record aside only when a new lock was published meanwhile;
 *                 with NO_RELEASE_GIVEBACK: only when the releaser had lost its own lock to
 *                 someone else.
 *   NO_FRESH, NO_FENCING, NO_ONLY_OWN  switch assertions off, to see the next one fail.
 * Bounds: N deployments with W workers each (commits are not bounded, see Deployment), FORCE
 * forced unlocks and UNLOCK plain unlocks (a stale takeover without acquire) by a person,
 * HB heartbeats per deployment (V1).
 */

#ifndef N
#define N 3
#endif
#ifndef W
#define W 2
#endif
#ifndef FORCE
#define FORCE 2
#endif
#ifndef UNLOCK
#define UNLOCK 2
#endif
#ifndef HB
#define HB 1
#endif

#ifdef NO_GIVEBACK
#define NO_RELEASE_GIVEBACK
#define NO_STALE_GIVEBACK
#endif

#define NONE   0
#define PERSON 0   /* the process slot of a person running `spaceport unlock` */

byte lock = NONE;      /* S/lock: whose record it is */

/* Ghost state, for the properties only; the protocol never reads it. */
byte last = NONE;      /* whose acquire read-back (step 1.3) succeeded last */

#ifdef CHECK_RELEASE_CLAIM
byte published;        /* records renamed into S/lock by acquires so far */
#define PUBLISH published++
#else
#define PUBLISH skip
#endif

#if defined(NO_RELEASE_GIVEBACK) && defined(CHECK_RELEASE_CLAIM)
bool taken[N+1];       /* d's record was moved out of S/lock by someone other than d */
#define TAKEN(by, rec) if :: rec != NONE && rec != by -> taken[rec] = true :: else fi
#else
#define TAKEN(by, rec) skip
#endif

/* Trail output (spin -t -T): who does what to which record. */
#define WHO(s)  if :: s == PERSON -> printf("P  ") :: else -> printf("D%d ", s) fi
#define REC(x)  if :: x == NONE -> printf("(no file)") :: else -> printf("(D%d's)", x) fi

/* ------------------------------------------------------------------------- properties */

/* The fencing bound: once another deployment holds the lock, d commits at most W times.
   `since` counts d's commits made while last != d, i.e. after another deployment's acquire
   succeeded (d acquires only once, so after that last never becomes d again). */
#ifdef NO_FENCING
#define FENCING(d)   skip
#else
#define FENCING(d)   assert(since <= W)
#endif

/* What the spec says of each worker: "each worker of d commits at most once more (the one
   commit whose verify started before the loss)", i.e. no verify says "ours" once another
   deployment holds the lock. With pending <= W this implies FENCING, for any number of
   commits after the loss, not only the W+1 the model lets a deployment make. */
#if defined(NO_FENCING) || defined(NO_FRESH)
#define FRESH(d)     skip
#else
#define FRESH(d)     assert(last == d)
#endif

/* Only its owner destroys a record: a rename over S/lock or an unlink of S/lock may only hit
   the caller's own record, or nothing. (Moving a record aside is not destroying it; every
   unlink and replacing rename in the model is guarded by this.) */
#ifdef NO_ONLY_OWN
#define ONLY_OWN(d)  skip
#else
#define ONLY_OWN(d)  assert(lock == NONE || lock == d)
#endif

/* ------------------------------------------------------------------------- operations */

/* 1. Acquire(d); ok = d holds the lock. */
inline acquire(d, ok) {
    /* 1.1 write S/lock.new.<d> (private) + 1.2 rename_noreplace(lock.new.<d> -> lock);
       EEXIST: unlink the private temp, refused */
    atomic {
        if
        :: lock == NONE -> lock = d; PUBLISH; ok = true;
           printf("D%d acquire: rename_noreplace lock.new.%d -> lock\n", d, d)
        :: else -> ok = false;
           printf("D%d acquire: EEXIST, lock is ", d); REC(lock); printf(": refused\n")
        fi
    }
    if
    :: ok ->
        atomic {                           /* 1.3 read S/lock back */
            ok = (lock == d);
            if
            :: ok -> last = d;
               printf("D%d acquire: reads lock back: ours. D%d HOLDS THE LOCK\n", d, d)
            :: else ->
               printf("D%d acquire: reads lock back: ", d); REC(lock); printf(", refused\n")
            fi
        }
    :: else
    fi
}

/* 6. StaleTakeover by slot s (a deployment, or PERSON). took = the caller may go on to
   Acquire (also when there was no lock at all: the acquire decides). */
inline stale_takeover(s, took) {
    atomic {                               /* 6.1 read S/lock: holder h */
        h = lock;
        WHO(s); printf("stale check: reads lock "); REC(h); printf("\n")
    }
    if
    :: h == NONE -> took = true
    :: h != NONE ->
        /* 6.2 watch h's heartbeat. "Not stale" ends the takeover with no effect, which is
           the same as this process taking no more steps, so only "stale" (rightly or
           wrongly) is modelled. */
#ifdef PRECHECK
        atomic {                           /* read S/lock again: still h's? */
            if
            :: lock != h ->
               took = false;
               WHO(s); printf("stale takeover: lock is no longer D%d's, stops\n", h);
               goto st_end
            :: else
            fi
        }
#endif
        atomic {                           /* 6.3 rename(lock -> lock.stale.<s>) + read it */
            mine = lock; lock = NONE; TAKEN(s, mine);
            WHO(s); printf("stale takeover: lock "); REC(mine); printf(" -> lock.stale\n")
        }
        if
        :: mine == NONE -> took = true     /* ENOENT: gone meanwhile, the acquire decides */
        :: mine == h -> took = true        /* h's: kept as lock.broken-<time> (private) */
        :: mine != NONE && mine != h ->
            took = false;
#ifdef NO_STALE_GIVEBACK
            atomic {
                WHO(s); printf("stale takeover: not D%d's, D%d's set aside as broken\n", h, mine)
            }
#else
            /* not h's: rename_noreplace back to S/lock; EEXIST: set aside as broken */
            atomic {
                if
                :: lock == NONE -> lock = mine;
                   WHO(s); printf("stale takeover: gives D%d's record back -> lock\n", mine)
                :: else ->
                   WHO(s); printf("stale takeover: EEXIST, D%d's record set aside\n", mine)
                fi
            }
#endif
        fi
    fi;
st_end:
    h = NONE; mine = NONE                  /* dead from here: no distinct states */
}

/* 4. Release(d). */
inline release(d) {
#ifdef V1
    atomic {                               /* read S/lock, check it is ours */
        mine = lock;
        printf("D%d release (v1): reads lock ", d); REC(mine); printf("\n")
    }
    if
    :: mine == d -> atomic {               /* unlink S/lock */
           printf("D%d release (v1): unlinks lock ", d); REC(lock); printf("\n");
           ONLY_OWN(d); lock = NONE
       }
    :: else
    fi
#else
#ifdef CHECK_RELEASE_CLAIM
    pub0 = published;
#endif
#ifdef PRECHECK
    atomic {                               /* read S/lock: not ours -> touch nothing */
        if
        :: lock != d -> printf("D%d release: lock is not ours, touches nothing\n", d);
           goto rel_end
        :: else
        fi
    }
#endif
    /* 4.1 rename(lock -> lock.release.<d>) + 4.2 read it + 4.3 unlink it if it is ours
       (the last two on the private name) */
    atomic {
        mine = lock; lock = NONE; TAKEN(d, mine);
        printf("D%d release: lock ", d); REC(mine); printf(" -> lock.release.%d\n", d)
    }
    if
    :: mine == NONE || mine == d -> skip  /* nothing to release (lost) / released */
    :: else ->
#ifdef NO_RELEASE_GIVEBACK
        atomic {
            printf("D%d release: not ours, D%d's record set aside as broken\n", d, mine);
#ifdef CHECK_RELEASE_CLAIM
            assert(taken[d])               /* only when d had lost its own lock unaware */
#else
            skip
#endif
        }
#else
        /* 4.4 rename_noreplace(lock.release.<d> -> lock); EEXIST: set aside as broken */
        atomic {
            if
            :: lock == NONE -> lock = mine;
               printf("D%d release: gives D%d's record back -> lock\n", d, mine)
            :: else ->
               printf("D%d release: EEXIST (lock is ", d); REC(lock);
               printf("), D%d's record set aside\n", mine);
#ifdef CHECK_RELEASE_CLAIM
               assert(published > pub0)    /* spec: only if a new lock was published */
#else
               skip
#endif
            fi
        }
#endif
    fi;
rel_end:
#endif
    mine = NONE
}

/* ------------------------------------------------------------------------- processes */

#ifdef V1
/* The old heartbeat: read S/lock, check it is ours, write a fresh copy of our record to a
   private temp and rename it over S/lock, replacing whatever is there by then. */
proctype Heartbeat(byte d) {
    byte beats = 0;
    byte seen;
    do
    :: beats < HB ->
        atomic {
            seen = lock;
            printf("D%d heartbeat (v1): reads lock ", d); REC(seen); printf("\n")
        }
        if
        :: seen == d -> seen = NONE;
           atomic {
               printf("D%d heartbeat (v1): renames a fresh copy over lock ", d); REC(lock);
               printf("\n");
               ONLY_OWN(d); lock = d
           };
           beats++
        :: else -> break
        fi
    :: else -> break
    od
}
#endif

/* A deployment: (a stale takeover of whatever is there, or not, then) acquire; if it holds,
   its W workers commit, and it releases after its last commit. The properties are about
   states, so a process that crashes or stalls for ever is any prefix of a run: no branch
   is needed for it.

   3. The W workers, as a pool: `pending` of them hold a verify that said "ours" and have not
   used it for a commit yet. A worker's verify is one read of S/lock, after its previous
   commit and before its next one; a shared verifier only makes several workers use the same
   read, which is one of the interleavings here. Workers are interchangeable, so W worker
   processes give the same histories of S/lock and of commits as the pool, in many more
   states. Commits never touch S/lock, so before the loss their number changes nothing: they
   are not counted, and not bounded. After the loss (last != d) the pool may make up to W+1
   commits, one more than the bound, so that a violation is reachable if the protocol allows
   it; FRESH covers any number. */
proctype Deployment(byte d) {
    bool ok, took, stopped;
    byte h, mine, pending, since;
#ifdef CHECK_RELEASE_CLAIM
    byte pub0;
#endif
    if
    :: skip                                /* spaceport deploy */
    :: stale_takeover(d, took);            /* spaceport deploy --take-over-stale */
       if :: !took -> goto done :: else -> took = false fi
    fi;
    acquire(d, ok);
    if :: !ok -> goto done :: else -> ok = false fi;
#ifdef V1
    run Heartbeat(d);
#endif
    do
    :: !stopped && pending < W && pending + since <= W ->
        atomic {                           /* 2. Verify(d) by a worker */
            if
            :: lock == d -> pending++; printf("D%d verify: ours\n", d); FRESH(d)
            :: else -> stopped = true; printf("D%d verify: not ours, stops\n", d)
            fi
        }
    :: pending > 0 ->
        atomic {                           /* 3. a commit: one rename into place */
            pending--;
            if :: last != d -> since++ :: else fi;
            printf("D%d commits (%d since another deployment holds the lock)\n", d, since);
            FENCING(d)
        }
    :: stopped && pending == 0 ->          /* restarted (same work marker): it resumes, */
        atomic {                           /* and its next verify reads S/lock afresh */
            stopped = false; printf("D%d restarts\n", d)
        }
    :: pending == 0 -> release(d); break   /* after the final save */
    od;
done:
    skip
}

/* A person: `unlock --force` FORCE times and plain `unlock` UNLOCK times, at any moment. */
proctype Person() {
    byte forced = 0, plain = 0;
    byte h, mine;
    bool took;
    do
    :: forced < FORCE ->
        atomic {                           /* 5. rename(lock -> lock.broken-..) + read it */
            printf("P  unlock --force: lock "); REC(lock); printf(" -> lock.broken\n");
            TAKEN(PERSON, lock); lock = NONE
        };
        forced++
    :: plain < UNLOCK ->
        stale_takeover(PERSON, took);
        took = false; plain++
    :: else -> break
    od
}

init {
    byte d = 1;
    atomic {
        do
        :: d <= N -> run Deployment(d); d++
        :: else -> break
        od;
        run Person()
    }
}
